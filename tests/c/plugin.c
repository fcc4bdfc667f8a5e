/* A plugin for dlopen_late.c: allocates in its constructor, hands blocks to its loader, frees
 * the loader's blocks, and frees its own in its destructor. */
#include <stdlib.h>
#include <string.h>

static char *ctor_block;

__attribute__((constructor)) static void plugin_init(void) {
    ctor_block = malloc(1000);
    if (ctor_block) memset(ctor_block, 7, 1000);
}

__attribute__((destructor)) static void plugin_fini(void) { free(ctor_block); }

/* Returns a string allocated here (the caller frees it) and frees `from_caller`. */
char *plugin_work(char *from_caller) {
    free(from_caller);
    if (!ctor_block || ctor_block[999] != 7) return NULL;
    return strdup("made by the plugin");
}
