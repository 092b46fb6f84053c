# libFuzzer helpers for every fuzz target of the project (make fuzz):
# configured with -DSESSION_FUZZ=ON and clang, built with --target fuzzers,
# run with tests/fuzz/run.sh.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "SESSION_FUZZ=ON needs clang (libFuzzer), not ${CMAKE_CXX_COMPILER_ID}")
endif()

# UB must stop the fuzzer, not print and carry on.
set(FUZZ_SANITIZERS address,undefined)
set(FUZZ_FLAGS -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all)

add_custom_target(fuzzers)

# The library under test: instrumented for coverage and sanitizers, without
# libFuzzer's main (the fuzzer executables bring that).
function(fuzz_instrument library)
  target_compile_options(${library} PRIVATE
    -fsanitize=fuzzer-no-link,${FUZZ_SANITIZERS} ${FUZZ_FLAGS})
  target_link_options(${library} INTERFACE -fsanitize=${FUZZ_SANITIZERS})
endfunction()

# A fuzzer built from <name>.cpp in the calling directory, linked to `library`.
function(add_fuzzer name library)
  add_executable(${name} ${name}.cpp)
  target_link_libraries(${name} PRIVATE ${library})
  target_compile_options(${name} PRIVATE
    -fsanitize=fuzzer,${FUZZ_SANITIZERS} ${FUZZ_FLAGS} -Wall -Wextra)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,${FUZZ_SANITIZERS})
  add_dependencies(fuzzers ${name})
endfunction()
