// CPU flags from /proc/cpuinfo (the same words `grep -o -w ... /proc/cpuinfo` prints)
// and oneDNN's effective ISA, asked of the oneDNN already loaded by LibTorch through
// dlsym so that no oneDNN headers or link dependency are needed.
#include "compress/runtime/cpu_info.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

namespace compress {

namespace {

// dnnl_cpu_isa_t values of oneDNN 2.x (dnnl_types.h). Later versions renumber some;
// an unknown value is printed in hex and judged by the CPU flags.
struct IsaName {
  unsigned value;
  const char* name;
  bool vnni;
};
constexpr IsaName kOnednnIsas[] = {
    {0x1, "sse41", false},           {0x3, "avx", false},
    {0x7, "avx2", false},            {0x407, "avx2_vnni", true},
    {0xf, "avx512_mic", false},      {0x1f, "avx512_mic_4ops", false},
    {0x27, "avx512_core", false},    {0x67, "avx512_core_vnni", true},
    {0xe7, "avx512_core_bf16", true}, {0x3e7, "avx512_core_amx", true},
};

CpuInt8Info Detect() {
  CpuInt8Info info;
#if defined(__x86_64__) || defined(__i386__)
  info.x86 = true;
#endif
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  bool have_flags = false;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    std::string value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    if (key == "model name" && info.model.empty()) info.model = value;
    if (key == "flags" && !have_flags) {
      std::istringstream words(value);
      for (std::string w; words >> w;) flags.insert(w);
      have_flags = true;
    }
  }
  info.avx2 = flags.count("avx2") != 0;
  info.avx512f = flags.count("avx512f") != 0;
  info.avx512_vnni = flags.count("avx512_vnni") != 0;
  info.avx_vnni = flags.count("avx_vnni") != 0;
  info.amx_int8 = flags.count("amx_int8") != 0;

  for (const char* var : {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
    if (const char* v = std::getenv(var); v != nullptr && *v != '\0') {
      info.max_isa_env = std::string(var) + "=" + v;
      break;
    }
  }
  // LibTorch links oneDNN (Debian's libtorch shares libdnnl.so.2); the C API query is
  // exported there. dlsym on the default scope finds it without linking to it.
  using GetIsa = unsigned (*)();
  if (auto fn = reinterpret_cast<GetIsa>(dlsym(RTLD_DEFAULT, "dnnl_get_effective_cpu_isa"))) {
    const unsigned isa = fn();
    char hex[32];
    std::snprintf(hex, sizeof(hex), "0x%x", isa);
    info.onednn_isa = hex;
    info.onednn_vnni = info.avx512_vnni || info.avx_vnni || info.amx_int8;
    for (const auto& known : kOnednnIsas) {
      if (known.value == isa) {
        info.onednn_isa = known.name;
        info.onednn_vnni = known.vnni;
      }
    }
  }
  return info;
}

}  // namespace

const CpuInt8Info& CpuInt8() {
  static const CpuInt8Info info = Detect();
  return info;
}

bool OrtInt8PairsSaturate(const CpuInt8Info& cpu) {
  return cpu.x86 && !(cpu.avx512_vnni || cpu.avx_vnni || cpu.amx_int8);
}

bool OnednnInt8PairsSaturate(const CpuInt8Info& cpu) {
  if (!cpu.x86) return false;
  if (!cpu.onednn_isa.empty()) return !cpu.onednn_vnni;
  return OrtInt8PairsSaturate(cpu);
}

std::string CpuInt8Summary() {
  const CpuInt8Info& cpu = CpuInt8();
  std::string flags;
  auto add = [&](bool on, const char* name) {
    if (on) flags += (flags.empty() ? "" : " ") + std::string(name);
  };
  add(cpu.avx2, "avx2");
  add(cpu.avx512f, "avx512f");
  add(cpu.avx512_vnni, "avx512_vnni");
  add(cpu.avx_vnni, "avx_vnni");
  add(cpu.amx_int8, "amx_int8");
  if (flags.empty()) flags = cpu.x86 ? "none of avx2/avx512f/avx512_vnni/avx_vnni/amx_int8" : "n/a (not x86)";
  std::string s = "cpu: " + (cpu.model.empty() ? std::string("unknown") : cpu.model) +
                  "; int8 flags: " + flags + "; oneDNN ISA: " +
                  (cpu.onednn_isa.empty() ? std::string("unknown (query not exported)")
                                          : cpu.onednn_isa) +
                  "; " + (cpu.max_isa_env.empty() ? "ONEDNN_MAX_CPU_ISA unset" : cpu.max_isa_env) +
                  "; u8s8 int16 pair saturation: ONNX Runtime " +
                  (OrtInt8PairsSaturate(cpu) ? "yes" : "no") + ", oneDNN " +
                  (OnednnInt8PairsSaturate(cpu) ? "yes" : "no");
  return s;
}

}  // namespace compress
