// Moved to the public headers (include/kvstar) with status.h, which uses it.
#pragma once

#include "kvstar/check.h"  // IWYU pragma: export
