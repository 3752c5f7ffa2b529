# nectar_module(NAME SOURCES ... [LIBS ...])
#   Compiles SOURCES as an object library that becomes part of libnectar.
#   LIBS are link dependencies of libnectar (imported targets or -l names).
function(nectar_module name)
  cmake_parse_arguments(M "" "" "SOURCES;LIBS" ${ARGN})
  add_library(${name} OBJECT ${M_SOURCES})
  if(M_LIBS)
    target_link_libraries(${name} PUBLIC ${M_LIBS})
  endif()
  set_property(GLOBAL APPEND PROPERTY NECTAR_MODULES ${name})
  set_property(GLOBAL APPEND PROPERTY NECTAR_MODULE_LIBS ${M_LIBS})
endfunction()

# Builds libnectar.so and libnectar.a from every registered module.
# Targets: nectar (shared), nectar_static (static, used by tests so they can
# reach internal symbols).
function(nectar_assemble_library)
  get_property(mods GLOBAL PROPERTY NECTAR_MODULES)
  get_property(libs GLOBAL PROPERTY NECTAR_MODULE_LIBS)
  if(libs)
    list(REMOVE_DUPLICATES libs)
  endif()
  set(objs)
  foreach(m ${mods})
    list(APPEND objs $<TARGET_OBJECTS:${m}>)
  endforeach()
  add_library(nectar SHARED ${objs})
  add_library(nectar_static STATIC ${objs})
  set_target_properties(nectar_static PROPERTIES OUTPUT_NAME nectar)
  set_target_properties(nectar PROPERTIES VERSION ${PROJECT_VERSION}
                                          SOVERSION 0)
  foreach(t nectar nectar_static)
    target_link_libraries(${t} PUBLIC ${libs} Threads::Threads)
    target_include_directories(${t} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endforeach()
  install(TARGETS nectar nectar_static
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
endfunction()
