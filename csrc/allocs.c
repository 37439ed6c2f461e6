/* Placeholder: this component is not built yet. */
#include "module.h"

int
pab_allocs_exec(PyObject *module, pab_state *state)
{
    return 0;
}
