# Tests specific to the RocksDB and LevelDB engines (engine_rocksdb.c,
# engine_leveldb.c): delete-range inside a batch, views under concurrent
# writes, iteration bounds, lock conflicts across processes, stats, and
# damaged files on open and read.
add_executable(test_lsm ${CMAKE_CURRENT_LIST_DIR}/test_lsm.c)
target_link_libraries(test_lsm PRIVATE kv_storage kv_common PkgConfig::CMOCKA Threads::Threads)
add_test(NAME unit_storage_lsm COMMAND test_lsm)
set_tests_properties(unit_storage_lsm PROPERTIES LABELS unit TIMEOUT 120)
