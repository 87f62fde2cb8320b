// Moved to the public headers (include/kvstar): the error type is part of the embedding API.
#pragma once

#include "kvstar/status.h"  // IWYU pragma: export
