// The Python module googlenet_fused._C. It holds no Python functions: importing it runs the
// static TORCH_LIBRARY registrations, and the ops are then reached as torch.ops.googlenet_fused.*
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
