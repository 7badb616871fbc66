# The RAFTKV_STORE marker (src/storage/stor.c): no silent empty reopen.
add_executable(test_store_marker ${CMAKE_CURRENT_LIST_DIR}/test_store_marker.c)
target_link_libraries(test_store_marker PRIVATE kv_storage kv_common PkgConfig::CMOCKA)
add_test(NAME unit_storage_marker COMMAND test_store_marker)
set_tests_properties(unit_storage_marker PROPERTIES LABELS unit)
