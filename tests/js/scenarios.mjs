// More real-client scenarios against a wsedge rooms route. Each prints one JSON line.
//   node scenarios.mjs many URL ROOM CLIENTS EDITS   concurrent edits from many providers converge
//                                                   (URL may list several, comma-separated: client
//                                                   i uses URL i mod n, the late joiner the last)
//   node scenarios.mjs auth URL ROOM RW RO BAD       tokens via the provider's `params` option
//   node scenarios.mjs edit URL ROOM TEXT            one Y.Text + Y.Map edit (for the callback)
//   node scenarios.mjs awareness URL ROOM            a provider reconnects: how soon the other sees it
//   node scenarios.mjs bigsync URL ROOM MIB          a provider's first sync of a MIB MiB document
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [mode, url, room, ...rest] = process.argv.slice(2)
const result = { mode }
setTimeout(() => {
  console.log(JSON.stringify({ ...result, error: 'timeout' }))
  process.exit(1)
}, 60000)
const urls = url.split(',')
const connect = (doc, params = {}, at = urls[0]) =>
  new WebsocketProvider(at, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true, params })
const synced = (p) => new Promise((resolve) => {
  if (p.synced) return resolve()
  p.once('sync', (s) => s && resolve())
})
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const until = async (check) => { while (!check()) await sleep(20) }

if (mode === 'many') {
  const [n, m] = rest.map(Number)
  const docs = Array.from({ length: n }, () => new Y.Doc())
  const providers = docs.map((d, i) => connect(d, {}, urls[i % urls.length]))
  await Promise.all(providers.map(synced))
  // Every client edits concurrently: text at random positions, one map key per edit.
  await Promise.all(docs.map(async (doc, i) => {
    for (let j = 0; j < m; j++) {
      const t = doc.getText('t')
      t.insert(Math.floor(Math.random() * (t.length + 1)), `<${i}.${j}>`)
      doc.getMap('m').set(`${i}.${j}`, j)
      if (j % 5 === 0) await sleep(Math.random() * 10)
    }
  }))
  await until(() => docs.every((d) => d.getMap('m').size === n * m))
  const texts = docs.map((d) => d.getText('t').toString())
  result.mapSize = docs[0].getMap('m').size
  result.textLen = texts[0].length
  result.allEqual = texts.every((t) => t === texts[0])
  // Inserts land inside each other's tokens, so compare lengths and characters, not tokens.
  let expected = ''
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) expected += `<${i}.${j}>`
  const sorted = (s) => [...s].sort().join('')
  result.expectedLen = expected.length
  result.sameCharacters = sorted(texts[0]) === sorted(expected)
  // A late joiner gets the same document from the server.
  const late = new Y.Doc()
  const lp = connect(late, {}, urls[urls.length - 1])
  await synced(lp)
  await until(() => late.getMap('m').size === n * m)
  result.lateEqual = late.getText('t').toString() === texts[0]
  for (const p of [...providers, lp]) p.destroy()
} else if (mode === 'auth') {
  const [rw, ro, bad] = rest
  const warnings = []
  console.warn = (...args) => warnings.push(args.join(' '))
  const docW = new Y.Doc()
  const docR = new Y.Doc()
  const w = connect(docW, { token: rw })
  const r = connect(docR, { token: ro })
  await Promise.all([synced(w), synced(r)])
  docW.getText('t').insert(0, 'from rw')
  await until(() => docR.getText('t').toString() === 'from rw')
  result.readOnlyReceives = true
  docR.getText('t').insert(0, 'ro edit ')
  await until(() => warnings.some((x) => x.includes('Permission denied')))
  result.readOnlyDenied = true
  await sleep(300)
  result.writerText = docW.getText('t').toString()
  const late = new Y.Doc()
  const lp = connect(late, { token: rw })
  await synced(lp)
  result.lateText = late.getText('t').toString()
  // A bad token: the upgrade is refused; the provider reports a connection error, never syncs.
  const docB = new Y.Doc()
  const b = connect(docB, { token: bad })
  const err = await new Promise((resolve) => b.once('connection-error', (e) => resolve(e)))
  result.badTokenError = String(err?.message ?? err)
  result.badTokenSynced = b.synced
  for (const p of [w, r, lp, b]) p.destroy()
} else if (mode === 'edit') {
  const doc = new Y.Doc()
  const p = connect(doc)
  await synced(p)
  const probe = new Y.Doc()
  const q = connect(probe)
  await synced(q)
  doc.getText('t').insert(0, rest[0])
  doc.getMap('m').set('k', 'v')
  await until(() => probe.getMap('m').get('k') === 'v')
  result.done = true
  p.destroy()
  q.destroy()
} else if (mode === 'awareness') {
  const docA = new Y.Doc()
  const docB = new Y.Doc()
  const a = connect(docA)
  const b = connect(docB)
  await Promise.all([synced(a), synced(b)])
  b.awareness.setLocalStateField('user', { name: 'bob' })
  const bobAtA = () => a.awareness.getStates().get(docB.clientID)?.user?.name === 'bob'
  await until(bobAtA)
  result.seenBeforeReconnect = true
  // B's socket goes away (as on a network change); the server removes B's state at A.
  b.disconnect()
  await until(() => !bobAtA())
  result.removedAtA = true
  await sleep(200)
  const connected = new Promise((resolve) => b.on('status', (e) => e.status === 'connected' && resolve()))
  b.connect()
  await connected
  const t0 = Date.now()
  await until(bobAtA)
  result.reappearMs = Date.now() - t0
  a.destroy()
  b.destroy()
} else if (mode === 'bigsync') {
  const mib = Number(rest[0])
  const docA = new Y.Doc()
  docA.getText('t').insert(0, 'x'.repeat(mib * 1024 * 1024))
  result.updateBytes = Y.encodeStateAsUpdate(docA).length
  const t0 = Date.now()
  const a = connect(docA)
  await synced(a)
  const docB = new Y.Doc()
  const b = connect(docB)
  await synced(b)
  await until(() => docB.getText('t').length === mib * 1024 * 1024)
  result.bLen = docB.getText('t').length
  result.ms = Date.now() - t0
  result.aConnected = a.wsconnected
  a.destroy()
  b.destroy()
}
console.log(JSON.stringify(result))
process.exit(0)
