# Bitcask engine tests: record codec, recovery, hints, merge, views, rolling,
# keydir memory per key (src/storage/engine_bitcask.c, bitcask_*.c).
add_executable(test_bitcask ${CMAKE_CURRENT_LIST_DIR}/test_bitcask.c)
target_include_directories(test_bitcask PRIVATE ${PROJECT_SOURCE_DIR}/src/storage)
target_link_libraries(test_bitcask PRIVATE kv_storage kv_common PkgConfig::CMOCKA Threads::Threads)
add_test(NAME unit_storage_bitcask COMMAND test_bitcask)
set_tests_properties(unit_storage_bitcask PROPERTIES LABELS unit TIMEOUT 120)
