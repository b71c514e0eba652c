import cluster, { type Worker } from 'node:cluster'

// Questions a worker asks its supervisor over node:cluster's IPC channel, and
// the supervisor's answers: the counters every worker shares (rate limits,
// login throttle) and the whole gateway's /metrics. One small protocol: a
// question `{ type: 'tokengate:ask', topic, id, body }`, an answer
// `{ type: 'tokengate:answer', id, result | error }`.

const ASK = 'tokengate:ask'
const ANSWER = 'tokengate:answer'

interface Question { type: typeof ASK, topic: string, id: number, body: unknown }
interface Answer { type: typeof ANSWER, id: number, result?: unknown, error?: string }

/** The supervisor did not answer (gone, or its channel is closed). */
export class SupervisorUnavailableError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'SupervisorUnavailableError'
  }
}

function isMessage<T extends { type: string }> (message: unknown, type: T['type']): message is T {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type
}

/** True in a worker process the supervisor started. */
export function underSupervisor (): boolean {
  return cluster.isWorker && typeof process.send === 'function'
}

let nextId = 0
const pending = new Map<number, { resolve: (value: unknown) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }>()
let listening = false

function listen (): void {
  if (listening) return
  listening = true
  process.on('message', (message: unknown) => {
    if (!isMessage<Answer>(message, ANSWER)) return
    const waiting = pending.get(message.id)
    if (waiting === undefined) return
    pending.delete(message.id)
    clearTimeout(waiting.timer)
    if (message.error !== undefined) waiting.reject(new SupervisorUnavailableError(message.error))
    else waiting.resolve(message.result)
  })
  process.on('disconnect', () => {
    for (const [id, waiting] of pending) {
      pending.delete(id)
      clearTimeout(waiting.timer)
      waiting.reject(new SupervisorUnavailableError('the supervisor is gone'))
    }
  })
}

/** Asks the supervisor; rejects with SupervisorUnavailableError when it cannot answer within `timeoutMs`. */
export function askSupervisor (topic: string, body: unknown, timeoutMs: number): Promise<unknown> {
  listen()
  return new Promise((resolve, reject) => {
    if (process.send === undefined || process.connected !== true) {
      reject(new SupervisorUnavailableError('no channel to the supervisor'))
      return
    }
    const id = nextId++
    const timer = setTimeout(() => {
      pending.delete(id)
      reject(new SupervisorUnavailableError(`the supervisor did not answer ${topic} within ${timeoutMs} ms`))
    }, timeoutMs)
    timer.unref()
    pending.set(id, { resolve, reject, timer })
    const question: Question = { type: ASK, topic, id, body }
    process.send(question, undefined, undefined, (err: Error | null) => {
      if (err === null) return
      pending.delete(id)
      clearTimeout(timer)
      reject(new SupervisorUnavailableError(`cannot reach the supervisor: ${err.message}`))
    })
  })
}

export type Answerer = (body: unknown, worker: Worker) => unknown

/** In the supervisor: answers every worker's questions on `topic`. */
export function answerWorkers (answerers: Record<string, Answerer>): void {
  cluster.on('message', (worker: Worker, message: unknown) => {
    if (!isMessage<Question>(message, ASK)) return
    const answerer = answerers[message.topic]
    const reply = (answer: Omit<Answer, 'type' | 'id'>): void => {
      if (!worker.isConnected()) return
      worker.send({ type: ANSWER, id: message.id, ...answer } satisfies Answer, undefined, () => { /* a worker gone meanwhile asks no more */ })
    }
    if (answerer === undefined) {
      reply({ error: `unknown topic ${message.topic}` })
      return
    }
    Promise.resolve().then(() => answerer(message.body, worker)).then(
      (result) => { reply({ result }) },
      (err: unknown) => { reply({ error: err instanceof Error ? err.message : String(err) }) }
    )
  })
}
