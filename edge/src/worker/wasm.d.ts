/** wrangler bundles `.wasm` imports as precompiled modules (Workers may not compile WebAssembly at run time). */
declare module '*.wasm' {
  const module: WebAssembly.Module;
  export default module;
}
