// registry.c: the table behind mixer_by_name.
#include "registry.h"

#include <stddef.h>
#include <string.h>

#include "03_mha/mha.h"
#include "05_mla/mla.h"
#include "07_dsa/dsa.h"
#include "08_gated/gated.h"
#include "09_gdn/gdn.h"
#include "10_hybrids/kda.h"
#include "10_hybrids/lightning.h"
#include "10_hybrids/mamba2.h"
#include "11_compressed/compressed.h"

static const struct {
    const char *name;
    const MixerOps *ops;
} registry[] = {
    {"gqa", &gqa_mixer},
    {"mha", &gqa_mixer},
    {"mqa", &gqa_mixer},
    {"mla", &mla_mixer},
    {"dsa", &dsa_mixer},
    {"gated", &gated_mixer},
    {"gdn", &gdn_mixer},
    {"kda", &kda_mixer},
    {"lightning", &lightning_mixer},
    {"mamba2", &mamba2_mixer},
    {"csa", &csa_mixer},
    {"hca", &hca_mixer},
    {"v4swa", &v4swa_mixer},
};

const char *const mixer_names[] = {"gqa", "mha", "mqa", "mla", "dsa", "gated", "gdn", "kda", "lightning", "mamba2", "csa", "hca", "v4swa", NULL};

const MixerOps *mixer_by_name(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (strcmp(registry[i].name, name) == 0) return registry[i].ops;
    return NULL;
}
