# The storage conformance suite: one executable run once per engine
# (storage_<engine>), and the crash test per persistent engine
# (storage_crash_<engine>). An engine that is not built yet makes its run
# exit 77, which ctest shows as skipped.
add_executable(test_conformance ${CMAKE_CURRENT_LIST_DIR}/test_conformance.c
                                ${CMAKE_CURRENT_LIST_DIR}/conformance_model.c)
target_link_libraries(test_conformance PRIVATE kv_storage kv_common PkgConfig::CMOCKA)
foreach(engine memory rocksdb leveldb lmdb bitcask)
  add_test(NAME storage_${engine} COMMAND test_conformance ${engine})
  set_tests_properties(storage_${engine} PROPERTIES LABELS unit SKIP_RETURN_CODE 77
                                                    TIMEOUT 300)
endforeach()

add_executable(test_storage_crash ${CMAKE_CURRENT_LIST_DIR}/test_storage_crash.c)
target_link_libraries(test_storage_crash PRIVATE kv_storage kv_common)
foreach(engine rocksdb leveldb lmdb bitcask)
  add_test(NAME storage_crash_${engine} COMMAND test_storage_crash ${engine})
  set_tests_properties(storage_crash_${engine} PROPERTIES LABELS unit SKIP_RETURN_CODE 77
                                                          TIMEOUT 300)
endforeach()
