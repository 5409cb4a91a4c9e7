// Real y-websocket clients against a wsedge rooms route.
// usage: node interop.mjs ws://127.0.0.1:PORT/wss ROOM
// Prints one JSON object with what it observed; exits 1 on timeout.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [url, room] = process.argv.slice(2)
const result = {}
const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ...result, error: 'timeout' }))
  process.exit(1)
}, 30000)

const connect = (name, doc) => new WebsocketProvider(url, name, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
const synced = (p) => new Promise((resolve) => {
  if (p.synced) return resolve()
  p.once('sync', (s) => s && resolve())
})
const until = async (check) => {
  while (!check()) await new Promise((r) => setTimeout(r, 20))
}

const docA = new Y.Doc()
const docB = new Y.Doc()
const a = connect(room, docA)
const b = connect(room, docB)
await Promise.all([synced(a), synced(b)])

// Concurrent edits on Y.Text and Y.Map converge.
docA.getText('t').insert(0, 'hello from A. ')
docB.getText('t').insert(0, 'hello from B. ')
docA.getMap('m').set('a', 1)
docB.getMap('m').set('b', 2)
await until(() => docA.getText('t').toString().length === 28 && docB.getText('t').toString().length === 28 &&
  docA.getMap('m').size === 2 && docB.getMap('m').size === 2)
result.textA = docA.getText('t').toString()
result.textB = docB.getText('t').toString()
result.mapA = docA.getMap('m').toJSON()
result.mapB = docB.getMap('m').toJSON()

// A late joiner gets the full state from the server.
const docC = new Y.Doc()
const c = connect(room, docC)
await synced(c)
await until(() => docC.getText('t').toString().length === 28)
result.late = docC.getText('t').toString()

// Rooms are isolated.
const docD = new Y.Doc()
const d = connect(room + '-other', docD)
await synced(d)
result.other = docD.getText('t').toString()

// Awareness appears, then disappears when A's connection is killed without a close frame.
a.awareness.setLocalStateField('user', { name: 'ann' })
await until(() => b.awareness.getStates().get(docA.clientID)?.user?.name === 'ann')
result.awarenessSeen = true
a.shouldConnect = false
a.ws.terminate()
await until(() => !b.awareness.getStates().has(docA.clientID))
result.awarenessRemoved = true

for (const p of [b, c, d]) p.destroy()
clearTimeout(deadline)
console.log(JSON.stringify(result))
process.exit(0)
