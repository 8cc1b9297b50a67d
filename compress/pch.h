// Precompiled header for the library's own translation units (not installed).
#pragma once
#include <torch/torch.h>
