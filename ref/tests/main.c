/*
 * main.c: the unit test runner.
 *
 *   unit-tests               runs every suite
 *   unit-tests SUITE [TEST]  runs one suite, or one test of it
 *   unit-tests --list        names the suites and their tests
 *
 * Exits 0 only if every test ran and passed.
 */
#include "test_util.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

/* Every test module's registration: adding a module is one line here. */
static int (*const registrations[])(void) = {
    register_canon_tests,        register_vectors_tests,
    register_frame_tests,        register_auth_tests,
    register_store_sqlite_tests, register_store_pg_tests,
    register_session_tests,      register_versions_tests,
    register_incremental_tests,
};

static void list_tests(FILE *out) {
  CU_pTestRegistry reg = CU_get_registry();
  for (CU_pSuite s = reg ? reg->pSuite : NULL; s; s = s->pNext) {
    fprintf(out, "%s\n", s->pName);
    for (CU_pTest t = s->pTest; t; t = t->pNext)
      fprintf(out, "  %s\n", t->pName);
  }
}

int main(int argc, char **argv) {
  const char *suite_name = argc > 1 ? argv[1] : NULL;
  const char *test_name = argc > 2 ? argv[2] : NULL;
  unsigned failed;
  int status = 1;

  if (argc > 3 || (suite_name && (strcmp(suite_name, "-h") == 0 ||
                                  strcmp(suite_name, "--help") == 0))) {
    fprintf(stderr, "usage: %s [--list | SUITE [TEST]]\n", argv[0]);
    return 2;
  }
  if (CU_initialize_registry() != CUE_SUCCESS) {
    fprintf(stderr, "cannot initialize CUnit: %s\n", CU_get_error_msg());
    return 1;
  }
  for (size_t i = 0; i < sizeof registrations / sizeof registrations[0]; i++) {
    if (registrations[i]() != CUE_SUCCESS) {
      fprintf(stderr, "cannot register tests: %s\n", CU_get_error_msg());
      goto done;
    }
  }
  if (suite_name && strcmp(suite_name, "--list") == 0) {
    list_tests(stdout);
    status = 0;
    goto done;
  }

  CU_basic_set_mode(CU_BRM_VERBOSE);
  if (suite_name) {
    CU_pSuite suite = CU_get_suite(suite_name);
    CU_pTest test = suite && test_name ? CU_get_test(suite, test_name) : NULL;
    if (!suite || (test_name && !test)) {
      fprintf(stderr, "no %s %s; these exist:\n", suite ? "test" : "suite",
              suite ? test_name : suite_name);
      list_tests(stderr);
      status = 2;
      goto done;
    }
    if (test)
      CU_basic_run_test(suite, test);
    else
      CU_basic_run_suite(suite);
  } else {
    CU_basic_run_tests();
  }
  if (CU_get_error() != CUE_SUCCESS) {
    fprintf(stderr, "CUnit error: %s\n", CU_get_error_msg());
    goto done;
  }
  failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
           CU_get_number_of_suites_failed();
  status = failed ? 1 : 0;

done:
  CU_cleanup_registry();
  return status;
}
