# Writes OUTPUT: a C++ source holding every SCHEMA_DIR/NNN_*.sql in order,
# for syncd/daemon/migrate.hpp's embedded_migrations(). Run at build time
# so that an edited or added migration rebuilds the binary.
file(GLOB files "${SCHEMA_DIR}/[0-9][0-9][0-9]_*.sql")
list(SORT files)
set(body "")
foreach(path IN LISTS files)
  get_filename_component(name "${path}" NAME)
  string(SUBSTRING "${name}" 0 3 version)
  math(EXPR version "${version}")
  file(READ "${path}" sql)
  string(FIND "${sql}" ")syncd_sql\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "${name} contains the raw string delimiter")
  endif()
  string(APPEND body "        {${version}, \"${name}\", R\"syncd_sql(${sql})syncd_sql\"},\n")
endforeach()
set(content "// Generated from schema/*.sql by embed_migrations.cmake. Do not edit.
#include \"daemon/migrate.hpp\"

namespace syncd {

const std::vector<Migration>& embedded_migrations() {
    static const std::vector<Migration> all = {
${body}    };
    return all;
}

}  // namespace syncd
")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT old STREQUAL content)
  file(WRITE "${OUTPUT}" "${content}")
endif()
