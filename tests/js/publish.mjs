// Publish one message with the npm `redis` client, as the websocket-push README's JavaScript
// example does: redis.publish("BackgroundPush", JSON.stringify({ pushToUser, payload })).
// Usage: node publish.mjs <redis url> <channel> <json>; prints how many subscribers got it.
import { createClient } from "redis";

const [url, channel, json] = process.argv.slice(2);
const redis = createClient({ url });
await redis.connect();
const message = JSON.parse(json);
const receivers = await redis.publish(channel, JSON.stringify(message));
console.log(receivers);
await redis.quit();
