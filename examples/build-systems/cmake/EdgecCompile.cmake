# edgec_compile(<name> MODEL <model.onnx> SPEC <spec.edge> [OUTPUT <dir>] [EDGEC <command>...])
#
# Adds a custom target <name> that compiles MODEL for SPEC into the artifact folder
# OUTPUT (default: ${CMAKE_CURRENT_BINARY_DIR}/<name>). edgec's depfile tells CMake
# about every file the artifact depends on (included specs, external data, sample
# data), so the build reruns exactly when one of them changes.
function(edgec_compile name)
  cmake_parse_arguments(ARG "" "MODEL;SPEC;OUTPUT" "EDGEC" ${ARGN})
  if(NOT ARG_MODEL OR NOT ARG_SPEC)
    message(FATAL_ERROR "edgec_compile(${name}): MODEL and SPEC are required")
  endif()
  if(NOT ARG_OUTPUT)
    set(ARG_OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/${name}")
  endif()
  if(NOT ARG_EDGEC)
    set(ARG_EDGEC edgec)
  endif()
  get_filename_component(model "${ARG_MODEL}" ABSOLUTE)
  get_filename_component(spec "${ARG_SPEC}" ABSOLUTE)
  add_custom_command(
    OUTPUT "${ARG_OUTPUT}/manifest.json"
    COMMAND ${ARG_EDGEC} compile "${model}" --spec "${spec}" -o "${ARG_OUTPUT}"
            --depfile "${ARG_OUTPUT}.d" -q
    DEPENDS "${model}" "${spec}"
    DEPFILE "${ARG_OUTPUT}.d"
    COMMENT "edgec: compiling ${ARG_MODEL} for ${ARG_SPEC}"
    VERBATIM)
  add_custom_target(${name} ALL DEPENDS "${ARG_OUTPUT}/manifest.json")
endfunction()
