# nectar_add_tests(BIN name SOURCES ... TESTS t1 t2 ... [LABELS ...]
#                  [TIMEOUT seconds] [LIBS ...])
#   Builds one test binary from SOURCES plus the harness and registers one
#   CTest per test name, run as `name t`.  Exit 77 means skipped (only
#   outside CI; see tests/harness/test.h).
enable_testing()
function(nectar_add_tests)
  cmake_parse_arguments(T "" "BIN;TIMEOUT" "SOURCES;TESTS;LABELS;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  add_executable(${T_BIN} ${T_SOURCES}
                 ${PROJECT_SOURCE_DIR}/tests/harness/test.c)
  target_include_directories(${T_BIN} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${T_BIN} PRIVATE nectar_static ${T_LIBS})
  foreach(t ${T_TESTS})
    add_test(NAME ${T_BIN}.${t} COMMAND ${T_BIN} ${t})
    set_tests_properties(${T_BIN}.${t} PROPERTIES
      TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77 LABELS "${T_LABELS}")
  endforeach()
endfunction()
