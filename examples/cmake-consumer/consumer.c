/* Allocates through malloc and domalloc's extras and checks that domalloc served both:
 * domalloc_node_of() knows only blocks domalloc handed out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <domalloc.h>

int main(void)
{
    char *p = malloc(100);
    double *a = domalloc_malloc_on_node(1 << 20, domalloc_current_node());
    if (p == NULL || a == NULL)
        return 1;
    if (domalloc_node_of(p) < 0 || domalloc_node_of(a) != domalloc_current_node()) {
        fprintf(stderr, "malloc is not domalloc's\n");
        return 1;
    }
    if (strcmp(domalloc_version(), DOMALLOC_VERSION) != 0) {
        fprintf(stderr, "header %s, library %s\n", DOMALLOC_VERSION, domalloc_version());
        return 1;
    }
    printf("domalloc %s, %d node(s): ok\n", domalloc_version(), domalloc_node_count());
    free(a);
    free(p);
    return 0;
}
