/* A process ends when its last thread ends, whatever the allocator runs in the background.
 *
 *   last_thread_exits pthread_exit   threads allocate (enough for domalloc's purge thread to
 *                                    start when they exit), then main leaves with pthread_exit
 *   last_thread_exits fork           a thread forks; the child's only thread allocates and
 *                                    returns from its start routine (Python's
 *                                    test_main_thread_after_fork_from_nonmain_thread)
 *
 * domalloc's background purge thread kept both processes alive forever (the fork child became a
 * zombie leader with a live purge thread; the parent waited for it). The test harness's timeout
 * catches a hang; in fork mode the parent also gives up after 20 s. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK (64 << 10)
#define BLOCKS 64 /* 4 MiB per thread */

static void *keep[8][BLOCKS];

static void *alloc_and_leave(void *arg) {
    long t = (long)arg;
    for (int i = 0; i < BLOCKS; i++) {
        keep[t][i] = malloc(BLOCK);
        memset(keep[t][i], (int)t, BLOCK);
    }
    return NULL; /* the blocks stay allocated: memory in use when the thread exits */
}

static void *forker(void *arg) {
    (void)arg;
    pid_t pid = fork();
    if (pid == 0) {
        /* The child's only thread: allocate, free some, and return (pthread exit). */
        alloc_and_leave((void *)0);
        for (int i = 0; i < BLOCKS / 2; i++) free(keep[0][i]);
        return NULL;
    }
    for (int waited = 0; waited < 200; waited++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            printf("last_thread_exits: fork child ended (%d)\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            return (void *)1;
        }
        usleep(100000);
    }
    printf("last_thread_exits: FAILED: the fork child did not end within 20 s\n");
    kill(pid, SIGKILL);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "pthread_exit";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (strcmp(mode, "fork") == 0) {
        pthread_t t;
        void *ok = NULL;
        pthread_create(&t, NULL, forker, NULL);
        pthread_join(t, &ok);
        if (!ok) return 1;
        printf("last_thread_exits: ok (fork)\n");
        return 0;
    }
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, alloc_and_leave, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("last_thread_exits: ok (main leaves with pthread_exit; the process must end)\n");
    pthread_exit(NULL);
}
