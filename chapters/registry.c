// registry.c: the table behind mixer_by_name.
#include "registry.h"

#include <stddef.h>
#include <string.h>

#include "03_mha/mha.h"
#include "05_mla/mla.h"
#include "07_dsa/dsa.h"

static const struct {
    const char *name;
    const MixerOps *ops;
} registry[] = {
    {"gqa", &gqa_mixer},
    {"mha", &gqa_mixer},
    {"mqa", &gqa_mixer},
    {"mla", &mla_mixer},
    {"dsa", &dsa_mixer},
};

const char *const mixer_names[] = {"gqa", "mha", "mqa", "mla", "dsa", NULL};

const MixerOps *mixer_by_name(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (strcmp(registry[i].name, name) == 0) return registry[i].ops;
    return NULL;
}
