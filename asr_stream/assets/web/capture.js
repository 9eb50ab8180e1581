// AudioWorklet processor: posts each 128-sample render quantum (mono, float32, the context's rate) to the page.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch && ch.length) this.port.postMessage(ch.slice(0));
    return true;
  }
}
registerProcessor("capture", Capture);
