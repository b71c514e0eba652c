#!/usr/bin/env node
'use strict'
// Runs the compiled CLI (npm install builds it into dist/ through `prepare`).
const { main } = require('../dist/src/cli.js')

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exitCode = code
}, (err) => {
  console.error(err)
  process.exitCode = 1
})
