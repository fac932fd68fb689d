# One complete pybind11 module per instruction set, built from the same sources.
# Separate modules (not separate objects in one module) keep inline/template code
# compiled with AVX-512 flags from being picked by the linker for the AVX2 path;
# Python imports the best module the running CPU supports.

# csrc/kernels/cpu: the ops; csrc/decoder: the fused decode step composed from them (same module,
# so the step calls the kernels directly and compiles with the same ISA flags).
file(GLOB PIO_CPU_KERNEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/csrc/kernels/cpu/*.cpp)
file(GLOB PIO_DECODER_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/csrc/decoder/*.cpp)
set(PIO_CPU_SOURCES ${CMAKE_SOURCE_DIR}/csrc/bindings/cpu_module.cpp ${PIO_CPU_KERNEL_SOURCES} ${PIO_DECODER_SOURCES})

set(PIO_ISA_FLAGS_avx2 -mavx2 -mfma -mf16c)
set(PIO_ISA_FLAGS_avx512 -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq -mavx512vl)
# Every CPU with AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4) also has AVX512-VNNI (quantized dot products).
set(PIO_ISA_FLAGS_avx512bf16 ${PIO_ISA_FLAGS_avx512} -mavx512bf16 -mavx512vnni)

check_cxx_compiler_flag(-mavx512bf16 PIO_COMPILER_HAS_AVX512BF16)
set(PIO_CPU_ISAS avx2 avx512)
if(PIO_COMPILER_HAS_AVX512BF16)
  list(APPEND PIO_CPU_ISAS avx512bf16)
endif()

foreach(isa IN LISTS PIO_CPU_ISAS)
  set(target _cpu_${isa})
  pybind11_add_module(${target} MODULE ${PIO_CPU_SOURCES})
  target_include_directories(${target} PRIVATE ${CMAKE_SOURCE_DIR}/csrc/include ${CMAKE_SOURCE_DIR}/csrc)
  target_compile_definitions(${target} PRIVATE PIO_MODULE_NAME=${target} PIO_ISA_NAME="${isa}")
  target_compile_options(${target} PRIVATE ${PIO_ISA_FLAGS_${isa}} -O3 -fno-math-errno -Wall -Wno-unknown-pragmas)
  if(OpenMP_CXX_FOUND)
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
    target_compile_definitions(${target} PRIVATE PIO_HAVE_OPENMP=1)
  endif()
  install(TARGETS ${target} LIBRARY DESTINATION inference_pio)
endforeach()

# Built without ISA flags: tells Python which of the modules above this CPU can run.
pybind11_add_module(_cpuinfo MODULE ${CMAKE_SOURCE_DIR}/csrc/bindings/cpuinfo_module.cpp)
string(REPLACE ";" "," pio_isa_list "${PIO_CPU_ISAS}")
target_compile_definitions(_cpuinfo PRIVATE PIO_CPU_ISAS="${pio_isa_list}")
install(TARGETS _cpuinfo LIBRARY DESTINATION inference_pio)
