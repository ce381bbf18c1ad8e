//! `zoo-consumer NAME IMAGE`: classifies IMAGE with the pretrained model NAME and prints the top class and
//! all logits as one JSON line.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, image] = args.as_slice() else {
        return Err("usage: zoo-consumer NAME IMAGE".into());
    };

    // The three lines.
    let model = resnet::pretrained(name, &candle_core::Device::Cpu)?;
    let x = model.preprocess_file(image)?;
    let top = model.classify(&x, 1)?;

    let logits = model.logits(&x)?.squeeze(0)?.to_vec1::<f32>()?;
    let logits: Vec<String> = logits.iter().map(|l| l.to_string()).collect();
    println!(
        "{{\"class\":{},\"label\":{:?},\"logits\":[{}]}}",
        top[0].class,
        top[0].label,
        logits.join(",")
    );
    Ok(())
}
