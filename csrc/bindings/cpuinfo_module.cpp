// Compiled without ISA flags: safe to import on any x86-64, tells which CPU modules can run.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

namespace {

bool cpu_supports(const std::string& feature) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (feature == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (feature == "f16c") return __builtin_cpu_supports("avx2");  // every AVX2 CPU has F16C
  if (feature == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (feature == "avx512bf16") return cpu_supports("avx512") && __builtin_cpu_supports("avx512bf16");
  if (feature == "avx512vnni") return __builtin_cpu_supports("avx512vnni");
#endif
  return false;
}

}  // namespace

PYBIND11_MODULE(_cpuinfo, m) {
  m.doc() = "CPU feature detection for choosing the inference-pio kernel module";
  m.def("supports", &cpu_supports, "whether the running CPU (and OS) supports an ISA feature");
  std::vector<std::string> built;
  std::string s = PIO_CPU_ISAS;
  size_t pos = 0;
  while ((pos = s.find(',')) != std::string::npos) {
    built.push_back(s.substr(0, pos));
    s.erase(0, pos + 1);
  }
  if (!s.empty()) built.push_back(s);
  m.attr("built_isas") = built;
}
