// Every LLMIR op once, in MLIR's custom func form.
module @ops {
  func.func @all(%x: tensor<?x64xf32, #llmir.dims<["tokens"]>>, %ids: tensor<?xi32, #llmir.dims<["tokens"]>>, %pos: tensor<?xi32, #llmir.dims<["tokens"]>>) -> (tensor<?x48xf32, #llmir.dims<["tokens"]>>, tensor<?xi64, #llmir.dims<["tokens"]>>) attributes {llmir.dims = {tokens = 7 : i64}} {
    %emb = "llmir.param"() {name = "embed"} : () -> tensor<100x64xf32>
    %h = "llmir.embedding"(%ids, %emb) : (tensor<?xi32, #llmir.dims<["tokens"]>>, tensor<100x64xf32>) -> tensor<?x64xf32, #llmir.dims<["tokens"]>>
    %w = "llmir.param"() {name = "w"} : () -> tensor<48x64xf32>
    %b = "llmir.param"() {name = "b"} : () -> tensor<48xf32>
    %wt = "llmir.param"() {name = "wt"} : () -> tensor<64x48xf32>
    %l1 = "llmir.linear"(%x, %w, %b) : (tensor<?x64xf32, #llmir.dims<["tokens"]>>, tensor<48x64xf32>, tensor<48xf32>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %l2 = "llmir.linear"(%h, %wt) {weight_layout = "kn"} : (tensor<?x64xf32, #llmir.dims<["tokens"]>>, tensor<64x48xf32>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %qw = "llmir.param"() {name = "qw"} : () -> tensor<48x64xi4>
    %qs = "llmir.param"() {name = "qs"} : () -> tensor<48x2xf32>
    %l3 = "llmir.quantized_linear"(%x, %qw, %qs) {bits = 4 : i64, group_size = 32 : i64} : (tensor<?x64xf32, #llmir.dims<["tokens"]>>, tensor<48x64xi4>, tensor<48x2xf32>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %nw = "llmir.param"() {name = "nw"} : () -> tensor<48xf32>
    %n1 = "llmir.rms_norm"(%l1, %nw) {eps = 1.0e-06 : f32} : (tensor<?x48xf32, #llmir.dims<["tokens"]>>, tensor<48xf32>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %n2 = "llmir.layer_norm"(%l2, %nw, %nw) {eps = 1.0e-05 : f32} : (tensor<?x48xf32, #llmir.dims<["tokens"]>>, tensor<48xf32>, tensor<48xf32>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %s = "llmir.silu"(%n1) : (tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %g = "llmir.gelu"(%n2) {approximate = "tanh"} : (tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %m = "llmir.mul"(%s, %g) : (tensor<?x48xf32, #llmir.dims<["tokens"]>>, tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %a = "llmir.add"(%m, %l3) : (tensor<?x48xf32, #llmir.dims<["tokens"]>>, tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %ab = "llmir.add"(%a, %b) : (tensor<?x48xf32, #llmir.dims<["tokens"]>>, tensor<48xf32>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %sm = "llmir.softmax"(%ab) {axis = -1 : i64} : (tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %ar = "llmir.all_reduce"(%sm) {kind = "sum", world_size = 2 : i64} : (tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %q = "llmir.reshape"(%ar) : (tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>
    %p2 = "llmir.reshape"(%pos) : (tensor<?xi32, #llmir.dims<["tokens"]>>) -> tensor<1x?xi32, #llmir.dims<["tokens"]>>
    %r = "llmir.rope"(%q, %p2) {scaling = {factor = 8.0 : f32, high_freq_factor = 4.0 : f32, low_freq_factor = 1.0 : f32, original_max_position_embeddings = 8192 : i64, type = "llama3"}, style = "gptj", theta = 5.0e+05 : f32} : (tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>, tensor<1x?xi32, #llmir.dims<["tokens"]>>) -> tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>
    %k = "llmir.reshape"(%ar) : (tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<1x?x3x16xf32, #llmir.dims<["tokens"]>>
    %att = "llmir.attention"(%r, %r, %r) {causal = true, scale = 0.125 : f32, sliding_window = 4 : i64} : (tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>, tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>, tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>) -> tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>
    %o = "llmir.reshape"(%att) : (tensor<1x?x6x8xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    %am = "llmir.argmax"(%o) : (tensor<?x48xf32, #llmir.dims<["tokens"]>>) -> tensor<?xi64, #llmir.dims<["tokens"]>>
    return %o, %am : tensor<?x48xf32, #llmir.dims<["tokens"]>>, tensor<?xi64, #llmir.dims<["tokens"]>>
  }

  func.func @decode_step(%q: tensor<?x8x16xbf16, #llmir.dims<["batch"]>>, %kv: !llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = bf16, layers = 2>, %bt: tensor<?x?xi32, #llmir.dims<["batch", "blocks"]>>, %cl: tensor<?xi32, #llmir.dims<["batch"]>>, %k: tensor<?x2x16xbf16, #llmir.dims<["batch"]>>, %slots: tensor<?xi64, #llmir.dims<["batch"]>>) -> (tensor<?x8x16xbf16, #llmir.dims<["batch"]>>, !llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = bf16, layers = 2>) attributes {llmir.dims = {batch = 3 : i64, blocks = 33 : i64}} {
    %kv1 = "llmir.append_kv"(%kv, %k, %k, %slots) {layer = 1 : i64} : (!llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = bf16, layers = 2>, tensor<?x2x16xbf16, #llmir.dims<["batch"]>>, tensor<?x2x16xbf16, #llmir.dims<["batch"]>>, tensor<?xi64, #llmir.dims<["batch"]>>) -> !llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = bf16, layers = 2>
    %o = "llmir.paged_attention"(%q, %kv1, %bt, %cl) {layer = 1 : i64, scale = 2.5e-01 : f32} : (tensor<?x8x16xbf16, #llmir.dims<["batch"]>>, !llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = bf16, layers = 2>, tensor<?x?xi32, #llmir.dims<["batch", "blocks"]>>, tensor<?xi32, #llmir.dims<["batch"]>>) -> tensor<?x8x16xbf16, #llmir.dims<["batch"]>>
    return %o, %kv1 : tensor<?x8x16xbf16, #llmir.dims<["batch"]>>, !llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = bf16, layers = 2>
  }
}
