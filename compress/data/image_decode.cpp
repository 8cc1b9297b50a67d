// PNG and JPEG decoding behind DecodeImage. Both libraries report errors through
// longjmp (their C frames must not be unwound by a C++ exception), so each decoder keeps
// only trivially destructible state between its setjmp and the library calls, and the
// caller turns a failed decode into a compress::Error after the jump.
#include "compress/data/image_decode.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

// jpeglib.h needs <cstdio> (FILE, size_t) before it.
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "compress/base/error.h"

namespace compress {

namespace {

constexpr uint64_t kMaxPixels = uint64_t{1} << 28;

// ---- PNG (libpng's classic API: explicit transforms, no gamma handling) --------------

struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char message[256];
};

void PngRead(png_structp png, png_bytep out, size_t length) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (length > src->size - src->pos) png_error(png, "file is truncated");
  std::memcpy(out, src->data + src->pos, length);
  src->pos += length;
}

[[noreturn]] void PngFail(png_structp png, png_const_charp message) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->message, sizeof(src->message), "%s", message);
  png_longjmp(png, 1);
}

// Warnings (e.g. "iCCP: known incorrect sRGB profile") do not change the pixels.
void PngWarn(png_structp, png_const_charp) {}

// Fills `image` and returns true, or returns false with src->message set.
bool ReadPng(png_structp png, png_infop info, PngSource* src, DecodedImage& image) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, src, PngRead);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  if (uint64_t{width} * height > kMaxPixels) png_error(png, "image is over 2^28 pixels");
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  // PIL's view of the pixels: palette -> RGB, low-bit gray -> 8 bits, 16 bits -> high
  // byte, alpha and tRNS dropped (convert("RGB") / convert("L") drop alpha too).
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if ((color & PNG_COLOR_MASK_ALPHA) != 0) png_set_strip_alpha(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  if ((channels != 1 && channels != 3) || row_bytes != size_t{width} * channels) {
    png_error(png, "unexpected pixel layout after conversion to 8-bit gray/RGB");
  }
  image.height = height;
  image.width = width;
  image.channels = channels;
  image.pixels.resize(row_bytes * height);
  for (int pass = 0; pass < passes; ++pass) {
    for (png_uint_32 y = 0; y < height; ++y) {
      png_read_row(png, image.pixels.data() + size_t{y} * row_bytes, nullptr);
    }
  }
  png_read_end(png, nullptr);  // checks the chunks after the pixels, up to IEND
  return true;
}

DecodedImage DecodePng(const uint8_t* data, size_t size, const std::string& where) {
  PngSource src{data, size, 0, {}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, PngFail, PngWarn);
  png_infop info = png != nullptr ? png_create_info_struct(png) : nullptr;
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error(ErrorKind::kIo, where + ": cannot create a PNG decoder (out of memory)");
  }
  DecodedImage image;
  const bool ok = ReadPng(png, info, &src, image);
  png_destroy_read_struct(&png, &info, nullptr);
  if (!ok) throw Error(ErrorKind::kIo, where + ": unreadable PNG image: " + src.message);
  return image;
}

// ---- JPEG (libjpeg-turbo; default DCT and upsampling, as PIL decodes) ---------------

struct JpegErrors {
  jpeg_error_mgr mgr;  // first member: libjpeg hands us &mgr
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void JpegFail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// libjpeg only warns when the data ends early (and pads the image with gray); such a
// file is truncated, an error here as in PIL. Other warnings are ignored (and silent).
void JpegMessage(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) JpegFail(cinfo);
}

enum class JpegOutcome { kOk, kFailed, kCmyk, kTooLarge };

JpegOutcome ReadJpeg(jpeg_decompress_struct* cinfo, JpegErrors* errors, const uint8_t* data,
                     size_t size, DecodedImage& image) {
  if (setjmp(errors->jump)) return JpegOutcome::kFailed;
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(cinfo, TRUE);
  if (cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK) {
    return JpegOutcome::kCmyk;
  }
  cinfo->out_color_space = cinfo->num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(cinfo);
  if (uint64_t{cinfo->output_width} * cinfo->output_height > kMaxPixels) {
    return JpegOutcome::kTooLarge;
  }
  const size_t row_bytes = size_t{cinfo->output_width} * cinfo->output_components;
  image.height = cinfo->output_height;
  image.width = cinfo->output_width;
  image.channels = cinfo->output_components;
  image.pixels.resize(row_bytes * cinfo->output_height);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = image.pixels.data() + size_t{cinfo->output_scanline} * row_bytes;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  return JpegOutcome::kOk;
}

DecodedImage DecodeJpeg(const uint8_t* data, size_t size, const std::string& where) {
  jpeg_decompress_struct cinfo;
  JpegErrors errors;
  cinfo.err = jpeg_std_error(&errors.mgr);
  errors.mgr.error_exit = JpegFail;
  errors.mgr.emit_message = JpegMessage;
  errors.message[0] = '\0';
  DecodedImage image;
  const JpegOutcome outcome = ReadJpeg(&cinfo, &errors, data, size, image);
  jpeg_destroy_decompress(&cinfo);
  switch (outcome) {
    case JpegOutcome::kOk:
      return image;
    case JpegOutcome::kCmyk:
      throw Error(ErrorKind::kUnsupported,
                  where + ": CMYK JPEG images are not supported; expected gray or RGB");
    case JpegOutcome::kTooLarge:
      throw Error(ErrorKind::kIo, where + ": unreadable JPEG image: image is over 2^28 pixels");
    case JpegOutcome::kFailed:
      break;
  }
  throw Error(ErrorKind::kIo, where + ": unreadable JPEG image: " + errors.message);
}

}  // namespace

DecodedImage DecodeImage(const uint8_t* data, size_t size, const std::string& where) {
  if (size >= 8 && png_sig_cmp(data, 0, 8) == 0) return DecodePng(data, size, where);
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    return DecodeJpeg(data, size, where);
  }
  throw Error(ErrorKind::kIo, where + (size == 0 ? ": unreadable image: the file is empty"
                                                 : ": unreadable image: not a PNG or JPEG file "
                                                   "(no PNG or JPEG signature)"));
}

DecodedImage DecodeImageFile(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorKind::kIo, path + ": cannot read: " +
                                    (errno != 0 ? std::strerror(errno) : "open failed"));
  }
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(ErrorKind::kIo, path + ": cannot read: I/O error");
  return DecodeImage(bytes.data(), bytes.size(), path);
}

}  // namespace compress
