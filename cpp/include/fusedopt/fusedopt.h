// fusedopt.h — umbrella header of the fusedopt C++ API.
#pragma once

#include "fusedopt/cpu_capability.h"
#include "fusedopt/cuda.h"
#include "fusedopt/dcasgd.h"
#include "fusedopt/dtype.h"
#include "fusedopt/errors.h"
#include "fusedopt/lr_scheduler.h"
#include "fusedopt/optimizer.h"
#include "fusedopt/params.h"
#include "fusedopt/plan.h"
#include "fusedopt/prepared.h"
#include "fusedopt/sgd.h"
#include "fusedopt/tensor_view.h"
#include "fusedopt/version.h"
