// exercise.h: what the stubs of a student tree call. `make exercises` copies the repository and replaces
// every region marked "// EXERCISE exNN.M begin" ... "// EXERCISE exNN.M end" in the reference code by
// EXERCISE_TODO("exNN.M") and the region's one-line stub (tools/exercises.sh); the reference code
// never calls these.
#pragma once

// Says once per process, on stderr, that exercise id is still the starter's stub, where it is. The
// checker (`make check EX=NN.M`) reads this line to tell "not started" from "wrong".
void exercise_todo(const char *id, const char *file, int line);
#define EXERCISE_TODO(id) exercise_todo(id, __FILE__, __LINE__)

// The self-test builds every region as "stub if selected, else the reference": 1 when the environment
// variable EXERCISE_STUB names id, so one build proves each stub fails its own checker.
int exercise_stubbed(const char *id);
