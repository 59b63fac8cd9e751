/* store.c: the public entry points shared by every backend. */
#include "store.h"

void lipsync_store_free(lipsync_store *store) {
  if (store)
    store->methods->destroy(store);
}

const char *lipsync_store_errmsg(lipsync_store *store) {
  return store ? store_errmsg(store) : "no store";
}

void lipsync_store_interrupt(lipsync_store *store) {
  if (store && store->methods->interrupt)
    store->methods->interrupt(store);
}
