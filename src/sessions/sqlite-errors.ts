/** Opening the embedded store failed in a way the operator must fix: the message names the file. */
export class StoreOpenError extends Error {
  constructor (message: string, options?: { cause: unknown }) {
    super(message, options)
    this.name = 'StoreOpenError'
  }
}
