/* libmedgem's public header: include this one file to embed medgem in a C program.
 * Every function that can fail returns mg_status; mg_last_error() gives the message. */
#ifndef MEDGEM_H
#define MEDGEM_H

#define MG_VERSION "0.1.0"

#include "engine/config.h"
#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/json.h"
#include "engine/metrics.h"
#include "engine/safetensors.h"
#include "engine/status.h"
#include "engine/jobs/eval.h"

#endif
