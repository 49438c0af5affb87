# fusedopt_add_cpu_kernels(target sources...): compile the per-ISA kernel sources once per CPU capability
# into OBJECT libraries folded into `target`. Only these files get ISA flags; see cpp/src/cpu/README.md.
set(FUSEDOPT_CPU_CAPABILITIES baseline)
if(FUSEDOPT_CPU_DISPATCH AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64"
   AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  list(APPEND FUSEDOPT_CPU_CAPABILITIES avx2 avx512)
endif()
set(FUSEDOPT_FLAGS_baseline "")
set(FUSEDOPT_FLAGS_avx2 -mavx2 -mfma -mf16c)
# AVX-512 instructions on 256-bit vectors: on an AMD EPYC (Zen 4) 512-bit loops were up to 1.4x slower
# and never more than 2 % faster; GCC's tuning for Intel's AVX-512 cores prefers 256-bit vectors too
# (cpu/README.md).
set(FUSEDOPT_FLAGS_avx512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c
    -mprefer-vector-width=256)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 false positive inside its own avx512fintrin.h (_mm512_undefined_* feeding cvtph).
  list(APPEND FUSEDOPT_FLAGS_avx512 -Wno-maybe-uninitialized)
endif()

function(fusedopt_add_cpu_kernels target)
  foreach(cap IN LISTS FUSEDOPT_CPU_CAPABILITIES)
    add_library(${target}_${cap} OBJECT ${ARGN})
    target_compile_definitions(${target}_${cap} PRIVATE FUSEDOPT_CPU_CAPABILITY=${cap}
                                                        FUSEDOPT_CPU_CAPABILITY_${cap})
    target_compile_options(${target}_${cap} PRIVATE ${FUSEDOPT_FLAGS_${cap}})
    target_link_libraries(${target}_${cap} PRIVATE fusedopt_internal)
    set_target_properties(${target}_${cap} PROPERTIES POSITION_INDEPENDENT_CODE ON)
    target_sources(${target} PRIVATE $<TARGET_OBJECTS:${target}_${cap}>)
    string(TOUPPER ${cap} _CAP)
    target_compile_definitions(${target} PRIVATE FUSEDOPT_HAVE_CPU_${_CAP}=1)
  endforeach()
endfunction()
