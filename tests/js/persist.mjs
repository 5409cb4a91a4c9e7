// usage: node persist.mjs write URL ROOM TEXT   |   node persist.mjs read URL ROOM
// write: insert TEXT and wait until the server echoed our update back (so it was applied);
// read: print the room's text once synced.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [mode, url, room, text] = process.argv.slice(2)
setTimeout(() => { console.error('timeout'); process.exit(1) }, 20000)
const doc = new Y.Doc()
const p = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
await new Promise((resolve) => p.once('sync', (s) => s && resolve()))
if (mode === 'write') {
  // The server broadcasts every update to its sender too: a second doc listening on the same
  // room sees it once the server has applied it.
  const probe = new Y.Doc()
  const q = new WebsocketProvider(url, room, probe, { WebSocketPolyfill: WebSocket, disableBc: true })
  await new Promise((resolve) => q.once('sync', (s) => s && resolve()))
  doc.getText('t').insert(0, text)
  while (probe.getText('t').toString() !== text) await new Promise((r) => setTimeout(r, 20))
  q.destroy()
} else {
  console.log(doc.getText('t').toString())
}
p.destroy()
process.exit(0)
