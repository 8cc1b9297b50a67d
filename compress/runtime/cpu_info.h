// What this CPU offers INT8 kernels, and which instruction set oneDNN dispatches to.
// INT8 results depend on it: without a dot-product instruction (x86 VNNI or AMX), the
// u8 x s8 kernels of ONNX Runtime and oneDNN add pairs of products into a saturating
// int16 (vpmaddubsw), so quantized weights must stay within the portable range
// (quantization/int8_target.h). Printed beside every INT8 figure and test log.
#pragma once

#include <string>

namespace compress {

struct CpuInt8Info {
  std::string model;  // "AMD EPYC" (/proc/cpuinfo "model name"); empty when unknown
  bool x86 = false;
  bool avx2 = false, avx512f = false, avx512_vnni = false, avx_vnni = false, amx_int8 = false;
  // oneDNN's effective ISA as dnnl_get_effective_cpu_isa reports it ("avx2",
  // "avx512_core_vnni", ...; it honours ONEDNN_MAX_CPU_ISA), or empty when the oneDNN
  // that LibTorch uses does not export that query (a static, symbol-hidden build).
  std::string onednn_isa;
  bool onednn_vnni = false;   // that ISA has u8 x s8 dot products into int32
  std::string max_isa_env;    // ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) when set
};

// Detected once per process (the environment is read at the first call).
const CpuInt8Info& CpuInt8();

// Whether ONNX Runtime's u8 x s8 kernels on this CPU add product pairs into a
// saturating int16: x86 without AVX512-VNNI, AVX-VNNI or AMX. False on other
// architectures (ARM kernels widen before adding).
bool OrtInt8PairsSaturate(const CpuInt8Info& cpu);
// The same for LibTorch's oneDNN INT8 kernels: an x86 ISA without VNNI/AMX, as
// dispatched (ONEDNN_MAX_CPU_ISA=AVX2 makes any x86 CPU saturate). Unknown ISA: the
// CPU flags decide.
bool OnednnInt8PairsSaturate(const CpuInt8Info& cpu);

// One line: "cpu: AMD EPYC; int8 flags: avx2 avx512f avx512_vnni; oneDNN ISA:
// avx512_core_bf16 (VNNI); ONEDNN_MAX_CPU_ISA unset".
std::string CpuInt8Summary();

}  // namespace compress
