//! Class-name lists that ship with the project.

/// The 1000 ImageNet-1k class names in the standard (synset-sorted) order, from timm's synset files.
pub const IMAGENET_1K: &str = include_str!("../data/imagenet-1k.txt");

/// The CIFAR-10 classes in their standard order.
pub const CIFAR_10: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The label sets that ship with zoo, by name.
pub const SETS: &[&str] = &["imagenet-1k", "cifar-10"];

/// Class names of a named label set (`imagenet-1k`, `cifar-10`), if it ships with the project.
pub fn label_set(name: &str) -> Option<Vec<String>> {
    match name {
        "imagenet-1k" => Some(IMAGENET_1K.lines().map(str::to_string).collect()),
        "cifar-10" => Some(CIFAR_10.iter().map(|s| s.to_string()).collect()),
        _ => None,
    }
}

/// The standard label set for a head of `num_classes` outputs (1000: ImageNet-1k, 10: CIFAR-10), used
/// when a checkpoint names none.
pub fn standard_set(num_classes: usize) -> Option<&'static str> {
    match num_classes {
        1000 => Some("imagenet-1k"),
        10 => Some("cifar-10"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn imagenet_order_is_standard() {
        let l = super::label_set("imagenet-1k").unwrap();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[0], "tench, Tinca tinca");
        assert_eq!(l[281], "tabby, tabby cat");
        assert_eq!(l[285], "Egyptian cat");
        assert_eq!(l[999], "toilet tissue, toilet paper, bathroom tissue");
    }
}
