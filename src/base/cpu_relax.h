// CpuRelax: the spin-wait hint (x86 pause, Arm yield) for busy-wait loops.
#pragma once

namespace kvstar {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace kvstar
