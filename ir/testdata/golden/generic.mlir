// The generic form newer mlir-opt prints (properties in <{...}>), with
// debug locations and location aliases, and anonymous dynamic dims.
"builtin.module"() ({
  "func.func"() <{function_type = (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>, sym_name = "norm"}> ({
  ^bb0(%arg0: tensor<?x4xf32> loc("in.mlir":3:5), %arg1: tensor<4xf32> loc(#loc1)):
    %0 = "llmir.rms_norm"(%arg0, %arg1) {eps = 9.99999974E-6 : f32} : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32> loc("in.mlir":4:10)
    %1 = "llmir.silu"(%0) : (tensor<?x4xf32>) -> tensor<?x4xf32> loc(fused["a", "b"])
    %2 = "llmir.rms_norm"(%1, %arg1) {eps = 0x3727C5AC : f32} : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
    "func.return"(%2) : (tensor<?x4xf32>) -> () loc(#loc2)
  }) {arg_attrs = [{llmir.name = "x"}, {}]} : () -> () loc("in.mlir":2:3)
}) : () -> () loc(unknown)
#loc1 = loc("in.mlir":3:40)
#loc2 = loc("in.mlir":7:5)
