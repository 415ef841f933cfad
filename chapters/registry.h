// registry.h: every mixer the project has, by the name a weights file stores.
//
// common/ never includes a chapter, so the model loader asks through this table (model_load takes
// mixer_by_name as its MixerLookup). A new mechanism adds one line to registry.c.
#pragma once
#include "mixer.h"

// The mixer registered under name, or NULL. "mha" and "mqa" are the "gqa" mixer: which of the three a
// model is depends only on its n_kv_heads.
const MixerOps *mixer_by_name(const char *name);
// The registered names, NULL-terminated (for help texts and error messages).
extern const char *const mixer_names[];
