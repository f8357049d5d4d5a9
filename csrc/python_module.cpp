// The extension is imported as a Python module only so that its static
// initialisers (the TORCH_LIBRARY registrations) run; it has no Python
// functions. Not part of the CMake library, which has no Python.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                                          nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
