/**
 * The Node flags the gateway process runs with, in every launcher written in TypeScript (the demo, the benches); the
 * production launchers (compose/gateway.Dockerfile, deploy/base/gateway.yaml, `npm start`) spell the same value.
 *
 * V8 sizes a process's old generation from the machine's memory (about 4 GB on a 24 GB host, half a container's
 * limit), and lets garbage pile up towards that before it compacts: under 50 concurrent readers the gateway's live heap
 * stays near 70 MB while its heap grew to 290 MB between major collections (RSS +247 MB). Its large data (object
 * bytes, frames) lives in Buffers outside the V8 heap, so a bound on the old generation bounds RSS without limiting
 * what it streams. The worker, which de-identifies and renders whole objects, keeps V8's default.
 */
export const GATEWAY_MAX_OLD_SPACE_MB = 256;
export const GATEWAY_NODE_FLAGS: readonly string[] = [`--max-old-space-size=${GATEWAY_MAX_OLD_SPACE_MB}`];
