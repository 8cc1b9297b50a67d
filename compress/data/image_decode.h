// Decoding PNG (libpng) and JPEG (libjpeg-turbo) files to 8-bit gray or RGB pixels, as
// PIL hands them to torchvision: alpha dropped, palettes expanded, 16-bit samples cut to
// their high byte, no gamma or colour-profile conversion.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace compress {

struct DecodedImage {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;         // 1 (gray) or 3 (RGB)
  std::vector<uint8_t> pixels;  // height x width x channels, row-major (HWC)
};

// Decodes `size` bytes of a PNG or JPEG image, recognised by its signature (not by a
// file name). Throws Error(kIo) "<where>: ..." for any other format, a corrupt or
// truncated image (a JPEG that ends early included, which libjpeg would only warn
// about), an image over 2^28 pixels, and Error(kUnsupported) for CMYK JPEGs.
DecodedImage DecodeImage(const uint8_t* data, size_t size, const std::string& where);

// Reads `path` and decodes it with DecodeImage. Throws Error(kIo) naming the file.
DecodedImage DecodeImageFile(const std::string& path);

}  // namespace compress
