#include <string>

#include "store/block_store.h"
#include "store/dram/dram_store.h"
#include "store/file/file_store.h"
#include "store/tiered_store.h"

namespace kvstar {

StatusOr<std::unique_ptr<BlockStore>> OpenStore(std::string_view spec,
                                                const StoreOptions& options) {
  auto path_of = [&](std::string_view prefix) -> std::string {
    return std::string(spec.substr(prefix.size()));
  };
  auto bad = [&](const char* why) {
    return InvalidArgument(
        "store spec '%.*s' %s; accepted forms: 'dram', 'file:PATH', 'tiered:PATH'",
        static_cast<int>(spec.size()), spec.data(), why);
  };
  if (spec == "dram") {
    KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<DramStore> s, DramStore::Create(options));
    return std::unique_ptr<BlockStore>(std::move(s));
  }
  if (spec.starts_with("file:") || spec.starts_with("tiered:")) {
    const bool tiered = spec.starts_with("tiered:");
    const std::string path = path_of(tiered ? "tiered:" : "file:");
    if (path.empty()) return bad("has an empty PATH");
    if (tiered) {
      KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<TieredStore> s, TieredStore::Open(path, options));
      return std::unique_ptr<BlockStore>(std::move(s));
    }
    KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<FileStore> s, FileStore::Open(path, options));
    return std::unique_ptr<BlockStore>(std::move(s));
  }
  return bad("is not recognised");
}

}  // namespace kvstar
