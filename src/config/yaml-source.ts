import { readFileSync } from 'node:fs'
import { Ajv, type ErrorObject } from 'ajv'
import type { TSchema } from '@sinclair/typebox'
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node, type Scalar } from 'yaml'
import { DURATION_PATTERN } from './duration.js'

// Reads a YAML file, fills `${VAR}` / `${VAR:-default}` from the environment,
// validates it against a TypeBox schema and reports every problem as
// `file:line:col key.path message`, so ops can fix a config in one pass.

export type KeyPath = ReadonlyArray<string | number>

export interface ConfigIssue {
  file: string
  line: number
  col: number
  path: string
  message: string
}

export class ConfigError extends Error {
  readonly issues: ConfigIssue[]
  constructor (issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'))
    this.name = 'ConfigError'
    this.issues = issues
  }
}

export function formatIssue (issue: ConfigIssue): string {
  const where = issue.line > 0 ? `${issue.file}:${issue.line}:${issue.col}` : issue.file
  return issue.path === '' ? `${where} ${issue.message}` : `${where} ${issue.path} ${issue.message}`
}

export function formatKeyPath (path: KeyPath): string {
  let out = ''
  for (const part of path) {
    out += typeof part === 'number' ? `[${part}]` : (out === '' ? part : `.${part}`)
  }
  return out
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}/g
const WHOLE_ENV_REF = /^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$/

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true })
const validators = new WeakMap<TSchema, ReturnType<typeof ajv.compile>>()

export class YamlSource {
  readonly file: string
  private readonly doc: Document
  private readonly lines = new LineCounter()
  readonly issues: ConfigIssue[] = []

  /** `text`: the file's content as read earlier (the supervisor's snapshot), instead of reading it now. */
  constructor (file: string, env: NodeJS.ProcessEnv | null, text?: string) {
    this.file = file
    try {
      text ??= readFileSync(file, 'utf8')
    } catch (err) {
      this.doc = parseDocument('')
      this.issues.push({ file, line: 0, col: 0, path: '', message: `cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}` })
      return
    }
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true })
    for (const err of [...this.doc.errors, ...this.doc.warnings]) {
      const [line, col] = this.offsetPosition(err.pos[0])
      this.issues.push({ file, line, col, path: '', message: `is not valid YAML: ${err.message.split('\n')[0]}` })
    }
    if (env !== null && this.doc.errors.length === 0) this.substituteEnv(env)
  }

  /** Validates the document against `schema`, filling defaults; null when any issue was found. */
  validate<T> (schema: TSchema): T | null {
    if (this.issues.length > 0) return null
    const value: unknown = this.doc.toJS() ?? {}
    let validate = validators.get(schema)
    if (validate === undefined) {
      validate = ajv.compile(schema)
      validators.set(schema, validate)
    }
    if (!validate(value)) {
      for (const err of relevantErrors(validate.errors ?? [])) this.issues.push(this.issueFromAjv(err))
      return null
    }
    return value as T
  }

  /** Records a problem found after schema validation, pointing at the node for `path`. */
  report (path: KeyPath, message: string): void {
    const [line, col] = this.position(path)
    this.issues.push({ file: this.file, line, col, path: formatKeyPath(path), message })
  }

  private substituteEnv (env: NodeJS.ProcessEnv): void {
    visit(this.doc, {
      Scalar: (_key, node: Scalar, ancestors) => {
        if (typeof node.value !== 'string' || !node.value.includes('${')) return
        const raw = node.value
        const missing: string[] = []
        const replaced = raw.replace(ENV_REF, (_m, name: string, hasDefault: string | undefined, fallback: string | undefined) => {
          const fromEnv = env[name]
          if (fromEnv !== undefined && fromEnv !== '') return fromEnv
          if (hasDefault !== undefined) return fallback ?? ''
          missing.push(name)
          return ''
        })
        if (missing.length > 0) {
          const [line, col] = this.offsetPosition(node.range?.[0])
          this.issues.push({ file: this.file, line, col, path: formatKeyPath(pathOf(ancestors, node)), message: `needs environment variable ${missing.join(', ')}, which is not set` })
        }
        // A value that is only `${VAR}` takes the YAML type of what it expands to,
        // so `port: ${PORT:-8080}` is a number, as it would be written inline.
        node.value = WHOLE_ENV_REF.test(raw) ? typedScalar(replaced) : replaced
      }
    })
  }

  private issueFromAjv (err: ErrorObject): ConfigIssue {
    const path = err.instancePath === '' ? [] : err.instancePath.slice(1).split('/').map(unescapePointer).map((p) => /^[0-9]+$/.test(p) ? Number(p) : p)
    let keyPath: KeyPath = path
    let message = err.message ?? 'is invalid'
    let [line, col] = this.position(path)
    switch (err.keyword) {
      case 'required': {
        const missing = (err.params as { missingProperty: string }).missingProperty
        keyPath = [...path, missing]
        message = 'is required'
        break
      }
      case 'additionalProperties': {
        const extra = (err.params as { additionalProperty: string }).additionalProperty
        keyPath = [...path, extra]
        ;[line, col] = this.keyPosition(path, extra)
        message = 'is not a known key'
        break
      }
      case 'pattern': {
        const pattern = (err.params as { pattern: string }).pattern
        const described = (err.parentSchema as SchemaShape | undefined)?.description
        message = pattern === DURATION_PATTERN
          ? 'must be a duration such as 500ms, 30s, 15m, 2h or 14d'
          : described !== undefined ? `must be ${described} (${pattern})` : `must match ${pattern}`
        break
      }
      case 'anyOf':
        message = `must be ${describeAlternatives(err.parentSchema)}`
        break
      case 'minItems': {
        // The items' title names what the list holds (`upstream: []` must list at least one target).
        const limit = (err.params as { limit: number }).limit
        const noun = (err.parentSchema as SchemaShape | undefined)?.items?.title ?? 'item'
        message = limit === 1 ? `must list at least one ${noun}` : `must list at least ${limit} ${noun}s`
        break
      }
      case 'type':
        message = `must be ${withArticle(String((err.params as { type: string }).type))}`
        break
    }
    return { file: this.file, line, col, path: formatKeyPath(keyPath), message }
  }

  private position (path: KeyPath): [number, number] {
    // The deepest node that exists: a missing key is reported at its parent.
    for (let depth = path.length; depth >= 0; depth--) {
      const node = this.doc.getIn(path.slice(0, depth), true) as Node | undefined
      if (node?.range !== undefined && node.range !== null) return this.offsetPosition(node.range[0])
    }
    return [1, 1]
  }

  private keyPosition (path: KeyPath, key: string): [number, number] {
    const map = path.length === 0 ? this.doc.contents : this.doc.getIn(path, true)
    if (isMap(map)) {
      for (const item of map.items) {
        if (isScalar(item.key) && item.key.value === key && item.key.range !== undefined && item.key.range !== null) {
          return this.offsetPosition(item.key.range[0])
        }
      }
    }
    return this.position(path)
  }

  private offsetPosition (offset: number | undefined): [number, number] {
    if (offset === undefined) return [1, 1]
    const { line, col } = this.lines.linePos(offset)
    return [line, col]
  }
}

function typedScalar (text: string): unknown {
  if (text === '') return ''
  if (/^-?[0-9]+$/.test(text)) return Number(text)
  if (text === 'true' || text === 'false') return text === 'true'
  return text
}

function pathOf (ancestors: readonly unknown[], node: unknown): KeyPath {
  const path: Array<string | number> = []
  let child: unknown = node
  for (let i = ancestors.length - 1; i >= 0; i--) {
    const parent = ancestors[i]
    if (isPair(parent)) {
      if (parent.value === child && isScalar(parent.key)) path.unshift(String(parent.key.value))
    } else if (isSeq(parent)) {
      const index = parent.items.indexOf(child as never)
      if (index >= 0) path.unshift(index)
    }
    child = parent
  }
  return path
}

function unescapePointer (part: string): string {
  return part.replace(/~1/g, '/').replace(/~0/g, '~')
}

/**
 * Ajv reports every failed branch of a union; the union's own error says it
 * better, except where the value is an object or a list and one branch alone
 * is: that branch's errors name the very key or item (`redis.tls.verify is
 * not a known key`, `routes[0].upstream must list at least one target`).
 */
function relevantErrors (errors: ErrorObject[]): ErrorObject[] {
  const unions = errors.filter((e) => e.keyword === 'anyOf').map((e) => ({ error: e, path: `${e.schemaPath}/`, kept: sameKindBranch(e) }))
  return errors.filter((e) => {
    if (e.keyword === 'anyOf' && unions.some((u) => u.error === e && u.kept !== undefined)) return false
    return !unions.some((u) => e.schemaPath.startsWith(u.path) && (u.kept === undefined || !e.schemaPath.startsWith(`${u.path}${u.kept}/`)))
  })
}

/** The index of a union's only object branch when the value given is an object, or its only array branch when it is a list. */
function sameKindBranch (union: ErrorObject): number | undefined {
  const data: unknown = union.data
  if (data === null || typeof data !== 'object') return undefined
  const kind = Array.isArray(data) ? 'array' : 'object'
  const branches = (union.parentSchema as SchemaShape | undefined)?.anyOf ?? []
  const same = branches.flatMap((b, i) => b.type === kind ? [i] : [])
  return same.length === 1 ? same[0] : undefined
}

interface SchemaShape { const?: unknown, type?: string, title?: string, description?: string, anyOf?: SchemaShape[], items?: SchemaShape, required?: string[], properties?: Record<string, SchemaShape> }

function describeAlternatives (schema: unknown): string {
  const branches = (schema as SchemaShape).anyOf ?? []
  if (branches.length > 0 && branches.every((b) => b.const !== undefined)) {
    return `one of ${branches.map((b) => String(b.const)).join(', ')}`
  }
  return branches.map((b) => {
    if (b.const !== undefined) return JSON.stringify(b.const)
    if (b.type === 'object' && b.required !== undefined) return `an object with ${b.required.join(' and ')}`
    return withArticle(b.type ?? 'value')
  }).join(' or ')
}

function withArticle (type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`
}
