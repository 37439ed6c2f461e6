/* Placeholder: this component is not built yet. */
#include "module.h"

int
pab_histogram_exec(PyObject *module, pab_state *state)
{
    return 0;
}
