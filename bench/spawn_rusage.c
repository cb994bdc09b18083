/*
 * spawn_rusage RESULT_FILE PROG [ARGS...]
 *
 * Runs PROG as a child of this small process, reaps it with wait4() and writes one line to RESULT_FILE:
 *     <exit code> <ru_maxrss KiB> <user seconds> <system seconds>
 * and exits with the child's exit code (128 + signal number when it was killed).
 *
 * Why not os.wait4() straight from Python: Linux keeps the peak RSS across execve() (exec_mmap records the
 * old address space's high-water mark), so a program spawned by a 60 MB Python process reports at least
 * 60 MB.  Forked from this tiny process the floor is about 1 MB.  bench/run.py compiles it with cc into
 * bench/out/ and falls back to direct spawning (and says so) when no C compiler exists.
 */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: spawn_rusage RESULT_FILE PROG [ARGS...]\n");
        return 127;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 127;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("wait4");
        return 127;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    FILE *f = fopen(argv[1], "w");
    if (f == NULL) {
        perror(argv[1]);
        return 127;
    }
    fprintf(f, "%d %ld %ld.%06ld %ld.%06ld\n", code, ru.ru_maxrss, (long)ru.ru_utime.tv_sec,
            (long)ru.ru_utime.tv_usec, (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    fclose(f);
    return code;
}
