// Functions without a module around them, as MLIR allows.
func.func @f(%a: tensor<3x5xf16>, %b: tensor<5xf16>) -> tensor<3x5xf16> {
  %0 = "llmir.mul"(%a, %b) : (tensor<3x5xf16>, tensor<5xf16>) -> tensor<3x5xf16>
  %1 = "llmir.mul"(%a, %b) : (tensor<3x5xf16>, tensor<5xf16>) -> tensor<3x5xf16>
  %dead = "llmir.gelu"(%1) : (tensor<3x5xf16>) -> tensor<3x5xf16>
  %2 = "llmir.add"(%0, %1) : (tensor<3x5xf16>, tensor<3x5xf16>) -> tensor<3x5xf16>
  return %2 : tensor<3x5xf16>
}
