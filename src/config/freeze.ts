// Loaded configs are shared by the whole process; freezing them makes an accidental write throw
// (in strict mode) instead of silently changing behaviour for every reader.
export function deepFreeze<T>(value: T): T {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value;
  // Buffers (secrets) cannot be frozen: V8 refuses to freeze typed arrays with elements.
  if (ArrayBuffer.isView(value)) return value;
  for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<string | symbol, unknown>)[key]);
  return Object.freeze(value);
}
