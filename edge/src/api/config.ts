/** Limits and switches of the HTTP API, with their defaults. */

export interface ApiConfig {
  /** Largest request body, in bytes (413 above). */
  bodyLimitBytes: number;
  /** Largest decoded size of one image/audio/video part, in bytes. */
  maxMediaBytes: number;
  /** Most media parts (images, audio, videos) in one request (400 above). */
  maxMediaItems: number;
  /** Largest decoded size of all media parts of one request together, in bytes (413 above). */
  maxMediaTotalBytes: number;
  /** When set, GET /metrics and /readyz need `Authorization: Bearer <token>` (serve: METRICS_TOKEN). */
  metricsToken?: string;
  /** How long one readiness answer is reused (split mode pings every unit), in milliseconds. */
  readyCacheMs: number;
  /** Most completion tokens one request may ask for (400 above); the default for requests that do not say. */
  maxTokensCap: number;
  /** A request still generating after this long is stopped (504, or an error event when streaming). */
  requestTimeoutMs: number;
  /** Requests one key may start per minute; 0 disables. */
  requestsPerMinute: number;
  /** Requests one key may have in flight; 0 disables. */
  maxConcurrentPerKey: number;
  /** Serve without API keys (local development only). */
  noAuth: boolean;
}

export const DEFAULT_API_CONFIG: ApiConfig = {
  bodyLimitBytes: 20 * 1024 * 1024,
  maxMediaBytes: 10 * 1024 * 1024,
  maxMediaItems: 16,
  maxMediaTotalBytes: 16 * 1024 * 1024,
  readyCacheMs: 1000,
  maxTokensCap: 4096,
  requestTimeoutMs: 600_000,
  requestsPerMinute: 600,
  maxConcurrentPerKey: 16,
  noAuth: false,
};
