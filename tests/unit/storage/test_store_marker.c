/* test_store_marker.c -- the RAFTKV_STORE marker: a directory that held a
 * store never silently reopens as an empty one after its files vanish, is
 * never opened by the wrong engine, and a damaged marker is reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stor.h"

static const char *const persistent[] = {"rocksdb", "leveldb", "lmdb", "bitcask"};

static void make_store(const char *engine, const char *dir)
{
    struct stor_options o;
    struct stor_engine *e;
    char errmsg[KV_ERRMSG_SIZE];
    stor_options_init(&o);
    o.path = dir;
    assert_int_equal(stor_open(engine, &o, &e, errmsg), KV_OK);
    assert_int_equal(stor_put(e, "k", 1, "v", 1), KV_OK);
    stor_close(e);
}

static int open_rc(const char *engine, const char *dir, char *errmsg)
{
    struct stor_options o;
    struct stor_engine *e = NULL;
    stor_options_init(&o);
    o.path = dir;
    int rc = stor_open(engine, &o, &e, errmsg);
    stor_close(e);
    return rc;
}

/* Removes every file but the marker and the lock: the store's data is gone. */
static void remove_store_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "RAFTKV_STORE") == 0 ||
            strcmp(de->d_name, "LOCK") == 0) {
            continue;
        }
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s/%s'", dir, de->d_name);
        assert_int_equal(system(cmd), 0);
    }
    closedir(d);
}

static void test_marker(void **state)
{
    for (size_t i = 0; i < sizeof persistent / sizeof persistent[0]; i++) {
        const char *engine = persistent[i];
        char dir[] = "/tmp/raftkv-marker-XXXXXX";
        char errmsg[KV_ERRMSG_SIZE];
        char path[4200];
        assert_non_null(mkdtemp(dir));
        make_store(engine, dir);
        assert_int_equal(open_rc(engine, dir, errmsg), KV_OK);

        /* The wrong engine is refused, and told which one lives here. */
        const char *other = strcmp(engine, "lmdb") == 0 ? "bitcask" : "lmdb";
        assert_int_equal(open_rc(other, dir, errmsg), KV_EINVAL);
        assert_non_null(strstr(errmsg, engine));

        /* Data files gone: refused, not recreated empty. Twice, to show the
         * refusal created nothing that would let a retry pass. */
        remove_store_files(dir);
        assert_int_equal(open_rc(engine, dir, errmsg), KV_ECORRUPT);
        assert_non_null(strstr(errmsg, "missing"));
        assert_int_equal(open_rc(engine, dir, errmsg), KV_ECORRUPT);

        /* A damaged marker is reported by name. */
        snprintf(path, sizeof path, "%s/RAFTKV_STORE", dir);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs("garbage", f);
        fclose(f);
        assert_int_equal(open_rc(engine, dir, errmsg), KV_ECORRUPT);
        assert_non_null(strstr(errmsg, "RAFTKV_STORE"));

        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_marker)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
