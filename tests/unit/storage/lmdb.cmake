# LMDB engine tests (engine_lmdb.c): reopen, delete-range, atomicity under
# kill -9, views across threads, reader limit, directory lock, damaged files.
add_executable(test_lmdb ${CMAKE_CURRENT_LIST_DIR}/test_lmdb.c)
target_link_libraries(test_lmdb PRIVATE kv_storage kv_common PkgConfig::CMOCKA Threads::Threads)
add_test(NAME unit_storage_lmdb COMMAND test_lmdb)
set_tests_properties(unit_storage_lmdb PROPERTIES LABELS unit TIMEOUT 120)
