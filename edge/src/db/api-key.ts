/** API key format and hashing (Web Crypto, so it runs on Node and Workers alike). */

export const API_KEY_PREFIX = 'umk_';
const KEY_BYTES = 32;
const SHOWN_PREFIX_LENGTH = API_KEY_PREFIX.length + 8;

/** `umk_` + 32 random bytes in base64url (43 characters). */
export function generateApiKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  return API_KEY_PREFIX + toBase64Url(bytes);
}

export async function hashApiKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function apiKeyPrefix(key: string): string {
  return key.slice(0, SHOWN_PREFIX_LENGTH);
}

function toBase64Url(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A fresh key with what the database stores about it. */
export async function newApiKey(): Promise<{ key: string; prefix: string; hash: string }> {
  const key = generateApiKey();
  return { key, prefix: apiKeyPrefix(key), hash: await hashApiKey(key) };
}
