// Is an HS256 secret guessable? A length check alone accepts
// "my-super-secret-jwt-key-12345678" from published lists of JWT secrets, and
// one captured token lets an attacker try such lists offline. So we estimate
// what a guesser would have to try, not what the characters could hold:
// each character costs what its alphabet gives it, except where the text is
// predictable (a word from the lists such secrets are built from, a run of
// letters of one case as words are, a sequence like 1234 or abcd), and a
// secret under 128 bits, or made of repeated text, is refused.
//
// Nothing here may refuse a generated value: a random 32-byte secret written
// in base64, base64url or hex carries 256 bits, and the predictable patterns
// occur in such text by chance only a few characters at a time, which costs
// it far less than the 128 bits of margin (test/tokens/secret-strength.test.ts
// checks thousands of them). The rules that refuse outright (repeated text,
// few distinct characters) are set where chance alone practically never
// reaches them: a unit repeated four times over, an 8-character block twice,
// fewer than 10 distinct characters.

export const MIN_SECRET_BITS = 128

/** Words that guessable JWT secrets are made of (published lists, tutorials, defaults). */
const WORDS = [
  'secret', 'password', 'passwd', 'pass', 'changeme', 'change', 'default', 'example', 'sample', 'test', 'demo',
  'admin', 'private', 'public', 'signing', 'sign', 'hmac', 'sha', 'jwt', 'jws', 'token', 'key', 'auth', 'access',
  'refresh', 'session', 'super', 'very', 'long', 'strong', 'random', 'string', 'value', 'your', 'my', 'me', 'the',
  'this', 'is', 'for', 'and', 'app', 'api', 'dev', 'prod', 'production', 'staging', 'local', 'gateway', 'tokengate',
  'qwerty', 'letmein', 'hello', 'world', 'bit', 'bits'
].sort((a, b) => b.length - a.length)

/** A word from WORDS costs a guesser about this many bits (it is one of a short list). */
const WORD_BITS = 6
/** A letter inside a run of one case, as words are written, costs about what English text does per letter. */
const RUN_LETTER_BITS = 3
/** A character continuing a sequence (abcd, 1234, 9876) or repeating the last one. */
const SEQUENCE_BITS = 1

const HEX = /^(?:[0-9a-f]+|[0-9A-F]+)$/

/** log2 of the alphabet the secret is drawn from, judged from the classes it uses. */
function bitsPerChar (secret: string): number {
  if (HEX.test(secret)) return 4
  let pool = 0
  if (/[a-z]/.test(secret)) pool += 26
  if (/[A-Z]/.test(secret)) pool += 26
  if (/[0-9]/.test(secret)) pool += 10
  if (/[^a-zA-Z0-9]/.test(secret)) pool += 32
  return Math.log2(pool)
}

/** Positions covered by a listed word (case-insensitive), longest first. */
function wordPositions (secret: string): Array<[start: number, end: number]> {
  const lower = secret.toLowerCase()
  const taken = new Uint8Array(secret.length)
  const found: Array<[number, number]> = []
  for (const word of WORDS) {
    for (let i = lower.indexOf(word); i !== -1; i = lower.indexOf(word, i + 1)) {
      if (taken.subarray(i, i + word.length).some((x) => x === 1)) continue
      taken.fill(1, i, i + word.length)
      found.push([i, i + word.length])
    }
  }
  return found
}

/** Guessing cost, in bits, under the model above. */
export function estimateSecretBits (secret: string): number {
  const perChar = bitsPerChar(secret)
  const cost = new Array<number>(secret.length).fill(perChar)
  // Runs of four or more letters of one case (a leading capital allowed), as words are written.
  for (const m of secret.matchAll(/[A-Z]?[a-z]{4,}|[A-Z]{5,}/g)) {
    for (let i = m.index; i < m.index + m[0].length; i++) cost[i] = Math.min(cost[i], RUN_LETTER_BITS)
  }
  // Three or more characters in a row stepping by the same -1, 0 or +1 (aaa, abc, 321).
  for (let i = 2; i < secret.length; i++) {
    const step = secret.charCodeAt(i) - secret.charCodeAt(i - 1)
    if (Math.abs(step) <= 1 && secret.charCodeAt(i - 1) - secret.charCodeAt(i - 2) === step) {
      cost[i - 1] = Math.min(cost[i - 1], SEQUENCE_BITS)
      cost[i] = Math.min(cost[i], SEQUENCE_BITS)
    }
  }
  for (const [start, end] of wordPositions(secret)) {
    cost.fill(0, start, end)
    cost[start] = WORD_BITS
  }
  return cost.reduce((sum, c) => sum + c, 0)
}

/** Whether some `size`-character block occurs twice (a set, not a backtracking regex: a secret may be long). */
function repeatsBlock (secret: string, size: number): boolean {
  const seen = new Set<string>()
  for (let i = 0; i + size <= secret.length; i++) {
    const block = secret.slice(i, i + size)
    if (seen.has(block)) return true
    seen.add(block)
  }
  return false
}

/** Why a secret is guessable, or null when it is strong enough to sign our tokens. */
export function weakSecretReason (secret: string): string | null {
  const distinct = new Set(secret).size
  if (distinct < 10) return `has too little entropy (only ${distinct} distinct characters)`
  if (/(.{2,8})\1{4,}/.test(secret) || repeatsBlock(secret, 8)) return 'has too little entropy (repeated text)'
  const bits = estimateSecretBits(secret)
  if (bits < MIN_SECRET_BITS) return `looks guessable (words, sequences or few characters: about ${Math.floor(bits)} bits, ${MIN_SECRET_BITS} needed)`
  return null
}
